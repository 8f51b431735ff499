"""plw: the prompt loss weight as a first-class control of instruction fine-tuning."""

__version__ = "0.1.0"

# w_p = PLW ** P_EXPONENT maps 0.1 to 0.5 (paper §5.2): p = log 0.5 / log 0.1.
P_EXPONENT = 0.30102999566398120

# The paper's ten PLW levels (§4).
PAPER_PLW_LEVELS = (0.0, 5e-4, 2.236e-3, 1e-2, 2.463e-2, 5e-2, 1e-1, 2.463e-1, 5e-1, 1.0)
