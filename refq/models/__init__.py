"""Model descriptions (Llama decoder, BERT encoder), float references, autograd and training,
loaders for real models, and refq's model file."""
