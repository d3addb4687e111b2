"""The one exception type the trainer reports as a protocol `error` event with a stable code."""

from __future__ import annotations

# Codes the worker may see in {"type":"error","code":...}:
#   invalid_spec              the spec file is unreadable or a field is missing / has a wrong type
#   invalid_data              a training or validation file cannot be read, parsed or rendered
#   model_load_failed         the base model folder, its tokenizer or the init adapter cannot be loaded
#   device_unavailable        device "cuda" was asked for and no CUDA device is visible
#   quantization_unavailable  quantization "nf4" was asked for and bitsandbytes cannot be used
#   resume_failed             resume_from is missing, unreadable or belongs to a different job setup
#   training_diverged         the training loss became NaN or infinite
#   out_of_memory             the device (or the host) ran out of memory
#   internal_error            anything else (a bug); the message carries the exception text


class TrainerError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
