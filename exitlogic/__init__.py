"""Exit decision logic: the float LRA-EE policy and the bit-true fixed-point exit unit."""
