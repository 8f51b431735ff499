"""plw.serve: a self-hosted fine-tuning service with OpenAI's fine-tuning API and a prompt loss weight.

`plw serve` runs `create_app(settings)` (plw.serve.app) under uvicorn. Modules: settings (options
and on-disk layout), db (tables), auth (API keys, the caller's project), errors (OpenAI error
objects), schemas (bodies), files / jobs / models (routers), validation (training files),
worker (job runner). See docs/serve.md.
"""
