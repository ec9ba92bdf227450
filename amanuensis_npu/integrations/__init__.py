"""Where our encoder plugs into faster-whisper and WhisperX (library, CLI and patch)."""
