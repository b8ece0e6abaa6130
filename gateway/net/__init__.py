"""Defences of the listening sockets against hostile peers: who may connect, how many at once,
how long a connection may take to say what it wants, and what the process logs about it."""
