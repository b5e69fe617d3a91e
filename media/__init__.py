"""RTP legs, G.711, DTMF, jitter buffer, the 20 ms media clock, rooms, player, recorder."""
