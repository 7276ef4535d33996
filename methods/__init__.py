"""Method plug-ins: one module per method, each registered with ``dynbench.method.register_method``."""
