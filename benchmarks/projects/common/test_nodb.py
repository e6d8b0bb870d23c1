def test_0():
    users = [f"user{k}" for k in range(5)]
    assert len(users) == 5
