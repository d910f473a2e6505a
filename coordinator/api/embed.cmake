# Turns a file into a C array: cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake.
# Defines `const char NAME[]` and `const size_t NAME_len` (see chat_page.h).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from ${IN} by embed.cmake; do not edit */\n#include <stddef.h>\n"
     "const unsigned char ${NAME}[${n} + 1] = {\n${body}0};\nconst size_t ${NAME}_len = ${n};\n")
