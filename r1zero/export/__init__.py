"""Take a trained model home: GGUF files for llama.cpp / LM Studio / Ollama (`r1zero-export`).

`export_gguf(model_dir, out_path, out_type)` writes one file; `r1zero.export.cli` is the command line (a model
folder or a run directory in, GGUF files and a model card out); `r1zero.export.llamacpp` runs a file in
llama.cpp itself (the `xllamacpp` wheel) to check it.
"""

from r1zero.export.gguf_file import ARCHS, ExportResult, export_gguf
from r1zero.export.tensors import OUT_TYPES

__all__ = ["ARCHS", "OUT_TYPES", "ExportResult", "export_gguf"]
