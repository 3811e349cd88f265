"""Running networks: device choice and MONAI sliding-window inference with progress, cancellation,
mixed precision and an out-of-memory fall-back."""

from .device import choose_device  # noqa: F401
from .sliding import run_inferer  # noqa: F401
