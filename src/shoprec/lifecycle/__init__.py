"""The model lifecycle: registry, promotion gate, deployment plans (applying them is a shell's job)."""
