def test_0(postgresql, seeded_users):
    with postgresql.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM users")
        assert cursor.fetchone()[0] == 5
