"""`devops-agent eval`: score a model's diagnoses on recorded incidents, on real PromQL."""
