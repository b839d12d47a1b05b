"""The token grammar of HTTP fields (RFC 9110 §5.6.2), written once for every parser."""

import re

# tchar: any visible US-ASCII character except delimiters (RFC 9110 §5.6.2), as a
# regex character class body.
TCHAR = "!#$%&'*+.^_`|~0-9A-Za-z-"
TOKEN = re.compile(f"[{TCHAR}]+")
TOKEN_BYTES = re.compile(f"[{TCHAR}]+".encode())
# A media type's type or subtype, lowercased, where `*` is the wildcard and never
# part of a name (RFC 9110 §12.5.1).
MEDIA_NAME_CHAR = TCHAR.replace("*", "").replace("A-Z", "")
