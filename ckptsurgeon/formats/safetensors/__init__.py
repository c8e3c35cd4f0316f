"""safetensors files: header validated like the reference implementation; streaming writer."""
