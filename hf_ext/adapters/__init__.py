"""PEFT-style adapters: a config saved as JSON, weights as safetensors, save/load/push."""
