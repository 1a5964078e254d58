"""Reading cells: blinded reads, consensus, reader agreement and Grad-CAM for the reader."""
