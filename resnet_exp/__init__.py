"""resnet-exp: what skip connections do to a network as it gets deeper.

Train plain and residual twins across depths, record gradient magnitudes at the
first and last layers, log to MLflow, and redraw the report from MLflow.
"""

__version__ = "0.1.0"
