import sys, runpy
sys.argv = ["exp2_tma_cga.py", sys.argv[1]]
import common
orig = common.show
def show(k, *a, **kw):
    orig(k, *a, **kw)
    print("tensordesc_meta:", k.metadata.tensordesc_meta)
    open(f"exp2_{sys.argv[1]}.ptx", "w").write(k.asm["ptx"])
    open(f"exp2_{sys.argv[1]}.ttgir", "w").write(k.asm["ttgir"])
    open(f"exp2_{sys.argv[1]}.llir", "w").write(k.asm["llir"])
common.show = show
runpy.run_path("exp2_tma_cga.py", run_name="__main__", init_globals={"show": show})
