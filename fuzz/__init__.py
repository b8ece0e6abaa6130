"""Coverage-guided fuzz harnesses (atheris); see fuzz/smpp_decode.py. Not part of the test suite."""
