# Embed the dashboard's static files into a C table (cw_http_assets, see
# app/cw_http.h) so the daemon serves them without reading files at run
# time. Every *.html, *.js, *.css and *.svg file in DIR becomes one entry,
# served at "/<file name>". There is no build step for the page itself.
#   cmake -DDIR=app/dashboard -DOUT=cw_dashboard_assets.c -P embed.cmake
file(GLOB files RELATIVE ${DIR} ${DIR}/*.html ${DIR}/*.js ${DIR}/*.css ${DIR}/*.svg)
list(SORT files)
set(body "")
set(table "")
set(n 0)
foreach(f ${files})
  if(f MATCHES "\\.html$")
    set(type "text/html; charset=utf-8")
  elseif(f MATCHES "\\.js$")
    set(type "text/javascript; charset=utf-8")
  elseif(f MATCHES "\\.css$")
    set(type "text/css; charset=utf-8")
  else()
    set(type "image/svg+xml")
  endif()
  file(READ ${DIR}/${f} hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR size "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "static const unsigned char asset${n}[] = {${hex} 0x00};\n")
  string(APPEND table "    {\"/${f}\", \"${type}\", asset${n}, ${size}},\n")
  math(EXPR n "${n} + 1")
endforeach()
file(WRITE ${OUT} "/* generated from ${DIR} by embed.cmake; do not edit */\n"
                  "#include \"cw_http.h\"\n\n${body}\n"
                  "const cw_http_asset_t cw_http_assets[] = {\n${table}    {0, 0, 0, 0}};\n"
                  "const size_t cw_http_n_assets = ${n};\n")
