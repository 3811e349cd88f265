"""tasks/fusion"""
