"""Model versions: checkpoints in the models folder, retraining from the store, the promotion gate, rollback."""
