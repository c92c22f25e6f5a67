# Turn a text file into a C string constant: -DIN=file -DOUT=file.c
file(READ ${IN} content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," content "${content}")
file(WRITE ${OUT} "/* generated from ${IN}; do not edit */\nconst char cw_conf_default_model_json[] = {${content} 0x00};\n")
