"""placeholder replaced below"""
def add_arguments(parser):
    pass
def run_bench(args):
    return 1
