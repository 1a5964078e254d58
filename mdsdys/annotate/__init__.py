"""Drawing nucleus masks: the annotation queue, canvas geometry and turning strokes into saved masks."""
