"""Running networks: device choice, MONAI sliding-window inference with progress, cancellation,
mixed precision and an out-of-memory fall-back, memory estimates and input sanity checks.

Submodules: device, inferer, memory, argmax, validation. Nothing is imported here, so that a light
module (validation) does not pull torch in.
"""
