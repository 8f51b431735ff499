"""Request and response bodies (pydantic), shaped as OpenAI's API reference; they make /openapi.json.

Responses allow no field OpenAI lacks except the PLW extension (`hyperparameters.prompt_loss_weight`)
and a few documented extras. Requests accept unknown keys (OpenAI adds fields often; the client may
send them) but every known key is checked.
"""

from __future__ import annotations

from typing import Any, Generic, List, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Auto = Literal["auto"]


class ListPage(BaseModel, Generic[T]):
    """OpenAI's list shape; `has_more` with `after=<last id>` fetches the next page."""

    object: Literal["list"] = "list"
    data: List[T]
    has_more: bool = False
    first_id: Optional[str] = None
    last_id: Optional[str] = None


# ---- files ---------------------------------------------------------------------------------

class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: Optional[str] = None
    expires_at: Optional[int] = None


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool


# ---- fine-tuning jobs ----------------------------------------------------------------------

class Hyperparameters(BaseModel):
    """OpenAI's supervised hyper-parameters plus plw's `prompt_loss_weight` (a number in [0, 1] or
    "auto": measure the training file's R_g and take plw's recommendation)."""

    model_config = ConfigDict(extra="ignore")

    n_epochs: Union[Auto, int, None] = Field(None, description='"auto" or an integer in [1, 50]')
    batch_size: Union[Auto, int, None] = Field(None, description='"auto" or an integer in [1, 256]')
    learning_rate_multiplier: Union[Auto, float, None] = Field(
        None, description='"auto" or a number in (0, 10]')
    prompt_loss_weight: Union[Auto, float, None] = Field(
        None, description='Weight of prompt tokens in the loss: a number in [0, 1] or "auto" (default 0.01, '
                          "as OpenAI's legacy API)")


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="ignore")
    hyperparameters: Optional[Hyperparameters] = None


class Method(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["supervised"] = "supervised"
    supervised: Optional[SupervisedMethod] = None


class JobCreate(BaseModel):
    """`POST /v1/fine_tuning/jobs`. `prompt_loss_weight` may also sit at the top level (as the
    legacy API had it; the client's `extra_body={"prompt_loss_weight": …}` lands there)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=256)
    training_file: str = Field(..., min_length=1, max_length=64)
    validation_file: Optional[str] = Field(None, max_length=64)
    hyperparameters: Optional[Hyperparameters] = None
    method: Optional[Method] = None
    suffix: Optional[str] = Field(None, max_length=64)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    metadata: Optional[dict[str, str]] = None
    integrations: Optional[List[Any]] = None
    prompt_loss_weight: Union[Auto, float, None] = None


class LegacyFineTuneCreate(BaseModel):
    """`POST /v1/fine-tunes` (OpenAI's retired API), mapped onto a fine-tuning job."""

    model_config = ConfigDict(extra="ignore")

    training_file: str = Field(..., min_length=1, max_length=64)
    validation_file: Optional[str] = Field(None, max_length=64)
    model: str = Field("builtin:tiny", min_length=1, max_length=256)
    n_epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate_multiplier: Optional[float] = None
    prompt_loss_weight: Union[Auto, float, None] = None
    suffix: Optional[str] = Field(None, max_length=64)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)


class JobError(BaseModel):
    code: str
    message: str
    param: Optional[str] = None


class JobHyperparameters(BaseModel):
    n_epochs: Union[Auto, int]
    batch_size: Union[Auto, int]
    learning_rate_multiplier: Union[Auto, float]
    prompt_loss_weight: Union[Auto, float]


class JobMethod(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: dict


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: Optional[JobError] = None
    fine_tuned_model: Optional[str] = None
    finished_at: Optional[int] = None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: List[str] = []
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: Optional[int] = None
    training_file: str
    validation_file: Optional[str] = None
    estimated_finish: Optional[int] = None
    integrations: Optional[List[Any]] = None
    metadata: Optional[dict[str, str]] = None
    method: JobMethod
    user_provided_suffix: Optional[str] = None


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: Optional[dict] = None


class CheckpointMetrics(BaseModel):
    step: Optional[float] = None
    train_loss: Optional[float] = None
    train_mean_token_accuracy: Optional[float] = None
    valid_loss: Optional[float] = None
    valid_mean_token_accuracy: Optional[float] = None
    full_valid_loss: Optional[float] = None
    full_valid_mean_token_accuracy: Optional[float] = None
    # plw's extension: the two halves of the loss the PLW weighs
    prompt_nll: Optional[float] = None
    completion_nll: Optional[float] = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


# ---- models --------------------------------------------------------------------------------

class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
