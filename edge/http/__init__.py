"""Pure HTTP rules: RFC 9110/9111/9211/7239 as functions of header blocks, no I/O."""
