"""The published numbers we reproduce, transcribed from shared/reference/rl2_tables.md (Duan et al.
2016 and the PyTorch RL² re-implementation). `tests/test_reference_tables.py` checks this copy
against that file whenever it is present."""

#: Bernoulli bandits: (n pulls, k arms) -> column -> mean total reward over 1000 tasks
BANDIT_COLUMNS = ["Random", "Gittins", "TS", "OTS", "UCB1", "eps-Greedy", "Greedy",
                  "RL² GRU paper", "RL² GRU re-impl", "SNAIL paper", "SNAIL re-impl"]
BANDIT = {
    (10, 5): [5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7, 6.7, 6.6, 6.8],
    (10, 10): [5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7, None, 6.7, None],
    (10, 50): [5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8, None, 6.7, None],
    (100, 5): [49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7, 78.7, 79.1, 78.5],
    (100, 10): [49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5, None, 83.5, None],
    (100, 50): [49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9, None, 85.1, None],
    (500, 5): [249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6, None, 408.1, None],
    (500, 10): [249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5, None, 432.4, None],
    (500, 50): [249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9, None, 442.6, None],
}
#: our baseline name for each classical column
BANDIT_AGENTS = {"Random": "random", "Gittins": "gittins", "TS": "thompson", "OTS": "ots", "UCB1": "ucb1",
                 "eps-Greedy": "eps-greedy", "Greedy": "greedy"}

#: random tabular MDPs (10 states, 5 actions, horizon 10): n episodes -> column -> mean total reward
MDP_COLUMNS = ["Random", "PSRL", "OPSRL", "UCRL2", "BEB", "eps-Greedy", "Greedy",
               "RL² GRU paper", "RL² GRU re-impl", "SNAIL paper", "SNAIL re-impl"]
MDP = {
    10: [100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2, 157.3, 159.1, 160.1],
    25: [250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7, None, 447.2, None],
    50: [499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1, None, 942.3, None],
    75: [749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8, None, 1447.5, None],
    100: [999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7, None, 1953.1, None],
}
MDP_AGENTS = {"Random": "random", "PSRL": "psrl", "OPSRL": "opsrl", "UCRL2": "ucrl2", "BEB": "beb",
              "eps-Greedy": "eps-greedy", "Greedy": "greedy"}


def bandit_reference(n: int, k: int, column: str):
    return BANDIT[(n, k)][BANDIT_COLUMNS.index(column)]


def mdp_reference(n: int, column: str):
    return MDP[n][MDP_COLUMNS.index(column)]
