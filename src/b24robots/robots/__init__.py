"""The pure core: robot and parameter declarations. No I/O happens here."""
