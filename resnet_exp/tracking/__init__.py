"""Writing to MLflow: the store (URIs, retries, batched writes), the store check, run names
and tags, descriptions, and links into the MLflow UI."""
