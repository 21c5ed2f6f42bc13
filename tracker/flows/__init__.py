"""tracker/flows"""
