import pytest

from webapp.security.password_policy import MAX_LENGTH, MIN_LENGTH, password_problems


@pytest.mark.parametrize(
    "password",
    [
        "x7$Kq!p2Lm#9vR",
        "correct horse battery staple",
        "Tr0ub4dor&3-walrus",
        "x7$Kq!p2Lm#9vR" * 9,  # 126 characters: long inputs must not trip zxcvbn's length guard
    ],
)
def test_strong_passwords_are_accepted(password):
    assert password_problems(password) == []


@pytest.mark.parametrize(
    "password",
    ["password1234", "qwerty123456", "aaaaaaaaaaaa", "123456789012", "PASSWORD1234"],
)
def test_common_or_predictable_passwords_are_rejected(password):
    problems = password_problems(password)

    assert problems
    assert any("common" in p or "guess" in p for p in problems)


def test_password_on_the_common_list_is_rejected_even_if_long_enough():
    # "1qaz2wsx3edc" is in zxcvbn's password list and 12 characters long.
    assert password_problems("1qaz2wsx3edc") == [
        "Password is on a list of commonly used passwords."
    ]


def test_too_short_is_rejected():
    problems = password_problems("x7$Kq!p2Lm#")  # 11 characters

    assert f"Password must be at least {MIN_LENGTH} characters long." in problems


def test_empty_password_is_rejected_without_crashing():
    assert password_problems("") == [f"Password must be at least {MIN_LENGTH} characters long."]


def test_too_long_is_rejected():
    problems = password_problems("correct horse battery staple " * 5)  # 145 characters

    assert problems == [f"Password must be at most {MAX_LENGTH} characters long."]


def test_exactly_the_maximum_length_is_accepted():
    password = ("x7$Kq!p2Lm#9vR" * 10)[:MAX_LENGTH]

    assert len(password) == MAX_LENGTH
    assert password_problems(password) == []


def test_length_counts_code_points_after_nfkc_normalisation():
    # 17 code points as typed, 11 once each "e + combining acute" becomes one "é".
    decomposed = "e\u0301" * 6 + "qzxvk"
    assert len(decomposed) == 17

    assert f"Password must be at least {MIN_LENGTH} characters long." in password_problems(
        decomposed
    )


@pytest.mark.parametrize(
    "password",
    [
        "Xq.Zamboni@Example.com",
        "my-xq.zamboni@example.com-pass",
        "XQ.ZAMBONI-vortex-17",
    ],
)
def test_password_containing_the_email_or_its_local_part_is_rejected(password):
    problems = password_problems(password, email="xq.zamboni@example.com")

    assert "Password must not contain your email address." in problems


def test_same_password_is_fine_for_another_account():
    assert password_problems("XQ.ZAMBONI-vortex-17", email="someone@example.com") == []


def test_very_short_local_part_does_not_forbid_every_password_with_those_letters():
    assert password_problems("correct horse battery al", email="al@example.com") == []


def test_name_counts_against_the_password():
    assert password_problems("Quintavious Wolfenbarger") == []

    problems = password_problems("Quintavious Wolfenbarger", name="Quintavious Wolfenbarger")

    assert problems
    assert problems[0].startswith("Password is too easy to guess.")


def test_no_composition_rules():
    # Lowercase letters and spaces only: NIST SP 800-63B says not to demand character classes.
    assert password_problems("purple elephants juggle quietly") == []
