"""The core: errors, fault injection, Java set-up, writing files atomically, quantization.
Imports nothing else of the package."""
