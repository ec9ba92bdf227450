"""The hardware-agnostic Whisper encoder: CTranslate2 weights, model resolution, PyTorch encoder."""
