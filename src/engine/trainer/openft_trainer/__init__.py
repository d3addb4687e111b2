"""openft's LoRA/QLoRA trainer: `python -m openft_trainer SPEC.json` (see __main__ for the protocol)."""
