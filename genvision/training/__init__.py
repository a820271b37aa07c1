"""Training loops on Hugging Face Accelerate. Accelerate calls live here and nowhere else in genvision."""
