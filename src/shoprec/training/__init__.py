"""Training: sequences and batches (data.py), the loop with early stopping and DDP (loop.py),
device and precision choice (device.py), the end-to-end fit (fit.py), torchrun entry (ddp.py)."""
