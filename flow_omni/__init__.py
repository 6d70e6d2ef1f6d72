"""flow_omni: speech language models that speak in continuous speech tokens."""

__version__ = "0.1.0"
