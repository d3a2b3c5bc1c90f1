"""The seam between LoRA Lab and ComfyUI's internals: model folders, the loaded model's
architecture and weights, patching, and the training host. Everything that reaches into ``comfy``
beyond the node schema lives here."""
