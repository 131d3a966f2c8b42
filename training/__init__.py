"""llasm training: the LLaSM model, base-model converters, datasets and the two training stages."""
