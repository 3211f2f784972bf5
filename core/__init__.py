"""earshot's platform-agnostic core: audio in, a Qwen-Audio answer out."""
