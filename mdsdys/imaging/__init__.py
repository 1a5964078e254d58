"""Images without models: safe decoding of uploads, square cell crops, thumbnails and colour. Torch-free."""
