"""MT routing: which SMSC connectors a message goes out on (rules.py), and the rules file
in force, reloaded when it changes (source.py)."""
