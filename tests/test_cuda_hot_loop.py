"""kernels/cuda/sass.py on hand-written SASS: which loop is the hot one, and how it is counted."""

from kernels.cuda import sass

SAMPLE = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
.L_x_2:
        /*0020*/                   LDS.128 R8, [R3] ;
        /*0030*/                   LDS R9, [R3+0x4] ;
        /*0040*/                   FFMA R10, R8, R9, R10 ;
        /*0050*/                   IADD3 R3, R3, 0x8, RZ ;
        /*0060*/               @P0 BRA `(.L_x_2) ;
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/               @P1 BRA `(.L_x_1) ;
        /*0090*/                   EXIT ;
.L_x_3:
        /*00a0*/                   BRA `(.L_x_3);
"""


def test_hot_loop_is_the_innermost_fma_loop():
    # .L_x_2 (5 instructions, 1 FFMA) beats the outer .L_x_1 (the same FFMA, 8 instructions);
    # the trap after EXIT branches to itself and is no loop
    mix = sass.hot_loop_mix(SAMPLE)
    assert mix == {"instructions": 5, "shared load 128-bit": 1, "shared load 32-bit": 1, "fp32 fma": 1,
                   sass.OTHER: 1, "control": 1}
    assert sass.shared_loads(mix) == (2, 1)
    assert sass.summary(mix) == "1 / 2 (1 vec) / 0 / 2"


def test_without_fma_the_loop_with_most_global_loads_wins():
    mix = sass.hot_loop_mix(SAMPLE.replace("FFMA", "IMAD"))
    assert mix["instructions"] == 8 and mix["global load"] == 1 and mix["barrier"] == 1
    assert sass.summary(mix) == "0 / 2 (1 vec) / 1 / 5"


def test_code_without_a_loop():
    assert sass.hot_loop_mix("        /*0000*/                   EXIT ;") == {"instructions": 0}
    assert sass.summary({"instructions": 0}) == "no loop"
