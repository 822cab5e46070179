"""Generated code for the Open Inference Protocol (KServe V2): package ``inference``."""
