"""Figures are written to files only (servers have no display): every plot goes through Agg."""


def headless_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
