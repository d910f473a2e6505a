/*
 * test_tensor_type.c - type table, half/bfloat16 conversion and bt_dequant_row on hand-built
 * blocks whose expected values are worked out in the comments (model-format.md 3.9).
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "tensor_type.h"

#define H_1 0x3C00     /* 1.0 */
#define H_HALF 0x3800  /* 0.5 */
#define H_2 0x4000     /* 2.0 */
#define H_QUART 0x3400 /* 0.25 */
#define H_M1 0xBC00    /* -1.0 */

static float y[256];

static void test_traits(void) {
    size_t b = 0;
    CHECK_OK(bt_type_row_bytes(BT_TYPE_Q4_1, 576, &b));
    CHECK_EQ_INT(b, 18 * 20);
    CHECK_OK(bt_type_row_bytes(BT_TYPE_Q8_0, 576, &b));
    CHECK_EQ_INT(b, 18 * 34);
    CHECK_OK(bt_type_row_bytes(BT_TYPE_F16, 3, &b));
    CHECK_EQ_INT(b, 6);
    CHECK_OK(bt_type_row_bytes(BT_TYPE_Q6_K, 512, &b));
    CHECK_EQ_INT(b, 420);
    CHECK_OK(bt_type_row_bytes(BT_TYPE_Q3_K, 256, &b)); /* known, not supported: still sized */
    CHECK_EQ_INT(b, 110);
    CHECK_EQ_INT(bt_type_row_bytes(BT_TYPE_Q4_1, 100, &b), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_type_row_bytes(BT_TYPE_Q4_K, 288, &b), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_type_row_bytes(BT_TYPE_Q8_0, -32, &b), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_type_row_bytes(4, 32, &b), BT_ERR_UNSUPPORTED); /* removed Q4_2 */
    CHECK_EQ_INT(bt_type_row_bytes(99, 32, &b), BT_ERR_UNSUPPORTED);
    CHECK(bt_type_traits_of(5) == NULL);
    CHECK(bt_type_traits_of(BT_TYPE_MAX_ID) == NULL);
    CHECK(strcmp(bt_type_name(BT_TYPE_Q4_1), "q4_1") == 0);
    CHECK(strcmp(bt_type_name(1000), "unknown") == 0);
    const bt_type_traits *t = bt_type_traits_of(BT_TYPE_Q2_K);
    CHECK(t != NULL && !t->supported && t->block_elems == 256 && t->block_bytes == 84);
    t = bt_type_traits_of(BT_TYPE_Q8_K);
    CHECK(t != NULL && !t->supported && t->block_bytes == 292);
    t = bt_type_traits_of(BT_TYPE_Q8_1);
    CHECK(t != NULL && !t->supported && t->block_elems == 32 && t->block_bytes == 36);
    const uint32_t supported[] = {BT_TYPE_F32,  BT_TYPE_F16,  BT_TYPE_BF16, BT_TYPE_Q8_0,
                                  BT_TYPE_Q4_0, BT_TYPE_Q4_1, BT_TYPE_Q5_0, BT_TYPE_Q5_1,
                                  BT_TYPE_Q4_K, BT_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        CHECK(bt_type_traits_of(supported[i])->supported);
}

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_half(void) {
    CHECK_EQ_INT(bt_f32_to_half(1.0f), 0x3C00);
    CHECK_EQ_INT(bt_f32_to_half(-2.0f), 0xC000);
    CHECK_EQ_INT(bt_f32_to_half(65504.0f), 0x7BFF);
    CHECK_EQ_INT(bt_f32_to_half(65519.0f), 0x7BFF); /* below the halfway point */
    CHECK_EQ_INT(bt_f32_to_half(65520.0f), 0x7C00); /* halfway, odd mantissa: to inf */
    CHECK_EQ_INT(bt_f32_to_half(1e10f), 0x7C00);
    CHECK_EQ_INT(bt_f32_to_half(-INFINITY), 0xFC00);
    CHECK_EQ_INT(bt_f32_to_half(-0.0f), 0x8000);
    bt_half hn = bt_f32_to_half(NAN);
    CHECK((hn & 0x7C00) == 0x7C00 && (hn & 0x3FF) != 0);
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(1.0f, -14)), 0x0400);        /* smallest normal */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(1.0f, -24)), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(1.0f, -25)), 0x0000);        /* tie -> even (0) */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(1.5f, -25)), 0x0001);        /* above the tie */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(3.0f, -25)), 0x0002);        /* 1.5 ulp: tie -> even 2 */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(1023.0f, -24)), 0x03FF);     /* largest subnormal */
    CHECK_EQ_INT(bt_f32_to_half(ldexpf(2047.0f, -25)), 0x0400);     /* rounds up into normal */
    CHECK_EQ_INT(bt_f32_to_half(1.0f + ldexpf(1.0f, -11)), 0x3C00); /* tie -> even */
    CHECK_EQ_INT(bt_f32_to_half(1.0f + ldexpf(3.0f, -11)), 0x3C02); /* tie -> even */
    CHECK_EQ_INT(bt_f32_to_half(1.0f + ldexpf(1.0f, -10)), 0x3C01);

    CHECK(bt_half_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(bt_half_to_f32(0x03FF) == ldexpf(1023.0f, -24));
    CHECK(bt_half_to_f32(0x3555) == 0.333251953125f);
    CHECK(bt_half_to_f32(0x7BFF) == 65504.0f);
    CHECK(isinf(bt_half_to_f32(0x7C00)) && bt_half_to_f32(0x7C00) > 0);
    CHECK(isinf(bt_half_to_f32(0xFC00)) && bt_half_to_f32(0xFC00) < 0);
    CHECK(isnan(bt_half_to_f32(0x7E00)));
    CHECK(signbit(bt_half_to_f32(0x8000)) && bt_half_to_f32(0x8000) == 0.0f);
    /* every non-nan half survives the round trip */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF))
            continue;
        bad += bt_f32_to_half(bt_half_to_f32((bt_half)h)) != h;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_bf16(void) {
    CHECK(bt_bf16_to_f32(0x3F80) == 1.0f);
    CHECK(bt_bf16_to_f32(0xC040) == -3.0f);
    CHECK_EQ_INT(bt_f32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(bt_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3F80); /* tie -> even */
    CHECK_EQ_INT(bt_f32_to_bf16(1.0f + ldexpf(3.0f, -8)), 0x3F82); /* tie -> even */
    CHECK_EQ_INT(bt_f32_to_bf16(f32_of_bits(0x3F808001)), 0x3F81); /* above the tie */
    CHECK_EQ_INT(bt_f32_to_bf16(INFINITY), 0x7F80);
    CHECK(isnan(bt_bf16_to_f32(bt_f32_to_bf16(f32_of_bits(0x7F800001))))); /* stays nan */
    CHECK_EQ_INT(bt_f32_to_bf16(f32_of_bits(0x7F7FFFFF)), 0x7F80); /* max float rounds to inf */
}

static void test_float_rows(void) {
    float f[2] = {1.5f, -2.0f};
    bt_dequant_row(BT_TYPE_F32, f, y, 2);
    CHECK(y[0] == 1.5f && y[1] == -2.0f);
    bt_half h[3] = {0x3C00, 0xC000, 0x0001}; /* 1, -2, 2^-24 */
    bt_dequant_row(BT_TYPE_F16, h, y, 3);
    CHECK(y[0] == 1.0f && y[1] == -2.0f && y[2] == ldexpf(1.0f, -24));
    uint16_t b[2] = {0x3FC0, 0xC040}; /* 1.5, -3 */
    bt_dequant_row(BT_TYPE_BF16, b, y, 2);
    CHECK(y[0] == 1.5f && y[1] == -3.0f);
}

static void test_q8_0(void) {
    bt_block_q8_0 b[2];
    memset(b, 0, sizeof b);
    b[0].d = H_QUART;
    b[0].qs[0] = 4;     /* 4 * 0.25 = 1 */
    b[0].qs[5] = -3;    /* -0.75 */
    b[0].qs[31] = -128; /* -32 */
    b[1].d = H_2;
    b[1].qs[0] = 127; /* 254 */
    bt_dequant_row(BT_TYPE_Q8_0, b, y, 64);
    CHECK(y[0] == 1.0f && y[5] == -0.75f && y[31] == -32.0f && y[1] == 0.0f);
    CHECK(y[32] == 254.0f && y[33] == 0.0f);
}

static void test_q4_0(void) {
    bt_block_q4_0 b;
    memset(&b, 0, sizeof b);
    b.d = H_2;
    b.qs[0] = 0x3A;  /* y[0] = (10-8)*2 = 4; y[16] = (3-8)*2 = -10 (not y[1]!) */
    b.qs[15] = 0xF0; /* y[15] = (0-8)*2 = -16; y[31] = (15-8)*2 = 14 */
    bt_dequant_row(BT_TYPE_Q4_0, &b, y, 32);
    CHECK(y[0] == 4.0f && y[16] == -10.0f && y[15] == -16.0f && y[31] == 14.0f);
    CHECK(y[1] == -16.0f); /* qs[1] = 0: (0-8)*2 */
}

static void test_q4_1(void) {
    bt_block_q4_1 b;
    memset(&b, 0, sizeof b);
    b.d = H_HALF;
    b.m = H_M1;
    b.qs[0] = 0x3A; /* y[0] = 10*0.5-1 = 4; y[16] = 3*0.5-1 = 0.5 */
    b.qs[7] = 0xF1; /* y[7] = 1*0.5-1 = -0.5; y[23] = 15*0.5-1 = 6.5 */
    bt_dequant_row(BT_TYPE_Q4_1, &b, y, 32);
    CHECK(y[0] == 4.0f && y[16] == 0.5f && y[7] == -0.5f && y[23] == 6.5f);
    CHECK(y[1] == -1.0f && y[17] == -1.0f); /* 0*0.5-1 */
}

static void test_q5_0(void) {
    bt_block_q5_0 b;
    memset(&b, 0, sizeof b);
    b.d = H_1;
    b.qh[0] = 0x01;  /* bit 0: 5th bit of y[0] */
    b.qh[2] = 0x01;  /* bit 16: 5th bit of y[16] */
    b.qh[3] = 0x80;  /* bit 31: 5th bit of y[31] */
    b.qs[0] = 0x21;  /* y[0] = (1|16)-16 = 1; y[16] = (2|16)-16 = 2 */
    b.qs[15] = 0x0F; /* y[15] = (15|0)-16 = -1; y[31] = (0|16)-16 = 0 */
    bt_dequant_row(BT_TYPE_Q5_0, &b, y, 32);
    CHECK(y[0] == 1.0f && y[16] == 2.0f && y[15] == -1.0f && y[31] == 0.0f);
    CHECK(y[1] == -16.0f); /* (0|0)-16 */
}

static void test_q5_1(void) {
    bt_block_q5_1 b;
    memset(&b, 0, sizeof b);
    b.d = H_HALF;
    b.m = H_1;
    b.qh[0] = 0x02; /* bit 1 -> y[1] */
    b.qh[2] = 0x02; /* bit 17 -> y[17] */
    b.qs[1] = 0x43; /* y[1] = (3|16)*0.5+1 = 10.5; y[17] = (4|16)*0.5+1 = 11 */
    b.qs[2] = 0x43; /* no high bits: y[2] = 3*0.5+1 = 2.5; y[18] = 4*0.5+1 = 3 */
    bt_dequant_row(BT_TYPE_Q5_1, &b, y, 32);
    CHECK(y[1] == 10.5f && y[17] == 11.0f && y[2] == 2.5f && y[18] == 3.0f);
    CHECK(y[0] == 1.0f); /* 0*0.5+1 */
}

static void test_q4_k(void) {
    bt_block_q4_k b;
    memset(&b, 0, sizeof b);
    b.d = H_1;
    b.dmin = H_HALF;
    b.scales[0] = 0x42; /* sc0 = 0x42&63 = 2; top bits 01 -> bits 4-5 of sc4 */
    b.scales[1] = 0x05; /* sc1 = 5 */
    b.scales[4] = 0x83; /* m0 = 3; top bits 10 -> bits 4-5 of m4 */
    b.scales[5] = 0x01; /* m1 = 1 */
    b.scales[8] = 0x51; /* sc4 = (0x51&15) | 1<<4 = 17; m4 = (0x51>>4) | 2<<4 = 37 */
    b.qs[0] = 0x97;     /* sub-block 0: low 7; sub-block 1: high 9 */
    b.qs[64] = 0x0A;    /* sub-block 4 (chunk 2, low nibbles): 10 */
    bt_dequant_row(BT_TYPE_Q4_K, &b, y, 256);
    CHECK(y[0] == 12.5f);    /* 1*2*7 - 0.5*3 */
    CHECK(y[1] == -1.5f);    /* 1*2*0 - 0.5*3 */
    CHECK(y[32] == 44.5f);   /* 1*5*9 - 0.5*1 */
    CHECK(y[128] == 151.5f); /* 1*17*10 - 0.5*37 */
    CHECK(y[160] == 0.0f);   /* sub-block 5: sc5 = m5 = 0 */
    CHECK(y[64] == 0.0f);    /* sub-block 2: sc2 = m2 = 0 */
}

static void test_q6_k(void) {
    bt_block_q6_k b;
    memset(&b, 0, sizeof b);
    b.d = H_HALF;
    b.scales[0] = 1;
    b.scales[2] = 2;
    b.scales[4] = 3;
    b.scales[6] = 4;
    b.scales[9] = 5;
    b.scales[11] = 6;
    b.scales[13] = 7;
    b.scales[15] = -8;
    /* half 0, l = 0 (is = 0): qh[0] = 0xE4 gives high pairs 0, 1, 2, 3 */
    b.ql[0] = 0x21;  /* q1 low 1, q3 low 2 */
    b.ql[32] = 0x43; /* q2 low 3, q4 low 4 */
    b.qh[0] = 0xE4;
    /* half 1, l = 17 (is = 1): qh[49] = 0x1B gives high pairs 3, 2, 1, 0 */
    b.ql[81] = 0xF0;  /* q1 low 0, q3 low 15 */
    b.ql[113] = 0x0F; /* q2 low 15, q4 low 0 */
    b.qh[49] = 0x1B;
    bt_dequant_row(BT_TYPE_Q6_K, &b, y, 256);
    CHECK(y[0] == -15.5f);   /* q1 = (1|0<<4)-32 = -31; 0.5*1*-31 */
    CHECK(y[32] == -13.0f);  /* q2 = (3|1<<4)-32 = -13; 0.5*2*-13 */
    CHECK(y[64] == 3.0f);    /* q3 = (2|2<<4)-32 = 2; 0.5*3*2 */
    CHECK(y[96] == 40.0f);   /* q4 = (4|3<<4)-32 = 20; 0.5*4*20 */
    CHECK(y[145] == 40.0f);  /* q1 = (0|3<<4)-32 = 16; 0.5*sc[9]=5*16 */
    CHECK(y[177] == 45.0f);  /* q2 = (15|2<<4)-32 = 15; 0.5*6*15 */
    CHECK(y[209] == -3.5f);  /* q3 = (15|1<<4)-32 = -1; 0.5*7*-1 */
    CHECK(y[241] == 128.0f); /* q4 = (0|0)-32 = -32; 0.5*-8*-32 */
    CHECK(y[1] == -16.0f);   /* q = -32, scale sc[0] = 1: 0.5*1*-32 */
    CHECK(y[16] == 0.0f);    /* l = 16 uses sc[1] = 0 */
}

int main(void) {
    test_traits();
    test_half();
    test_bf16();
    test_float_rows();
    test_q8_0();
    test_q4_0();
    test_q4_1();
    test_q5_0();
    test_q5_1();
    test_q4_k();
    test_q6_k();
    return check_finish();
}
