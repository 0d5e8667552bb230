"""The decode stage: packets to frames, the head of each stream's delivery."""
