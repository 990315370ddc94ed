"""Export of saved adapters for serving engines: one PEFT LoRA per block (``peft``) and the standalone
router copied into every export (``melo_router.py``, which imports no melo)."""

from .to_peft import MeloExportError, adapter_name, export_files, export_peft, peft_config

__all__ = ["MeloExportError", "adapter_name", "export_files", "export_peft", "peft_config"]
