/*
 * chat_page.h - the chat page served at GET / (chat_page.html, turned into a C array at build
 * time by embed.cmake; edit the HTML, not the generated file). Immutable.
 */
#ifndef BT_CHAT_PAGE_H
#define BT_CHAT_PAGE_H

#include <stddef.h>

extern const unsigned char bt_chat_page[]; /* [bt_chat_page_len], not NUL-terminated */
extern const size_t bt_chat_page_len;

#endif
