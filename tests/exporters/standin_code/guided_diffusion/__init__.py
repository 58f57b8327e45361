"""libstsl test stand-in for guided-diffusion's interfaces (see ../README.md)."""
