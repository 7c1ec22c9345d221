"""DNA, text and pixel data: tokenizers, FASTA window streaming, benchmark sources."""
