/* placeholder so the support library is never empty; removed once real helpers land. */
typedef int bt_support_unused;
