"""One fit: the optimiser and its schedule, the Keras callbacks that run the fit, and the
function that wires data, model, recorders and MLflow together (`fit.train`)."""
